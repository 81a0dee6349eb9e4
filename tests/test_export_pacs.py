"""SR export to a real Orthanc by C-STORE (CLI) and STOW-RS with basic auth (API), and every bad input of issue 20."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage
from pydicom.uid import generate_uid

from api.app import create_app
from api.config import ServiceSettings, hash_key
from tests.commands import index, run
from tests.conftest import testdata_file
from tests.orthanc import Orthanc, encode, free_port, start_orthanc, with_new_uids

pytestmark = pytest.mark.peers  # starts Orthanc and DICOM/HTTP peers (not in `make test-fast`)

USER, PASSWORD = "radiology", "export-test-password"
OUR_AE = "MEDSEARCH"
FILES = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm", "emri_small.dcm", "liver_1frame.dcm"]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    # our AE is a known modality: Orthanc answers C-FIND (the study check) only to those
    server = start_orthanc(
        tmp_path_factory.mktemp("orthanc-export"), modalities={"medsearch": (OUR_AE, 1)}, users={USER: PASSWORD}
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def corpus(orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict[str, Any]:
    """Real files, each its own study, in Orthanc and indexed; plus one DICOM whose study Orthanc never saw."""
    root = tmp_path_factory.mktemp("export")
    folder = root / "images"
    folder.mkdir()
    for name in FILES:
        ds = with_new_uids(testdata_file(name), study=generate_uid())
        data = encode(ds)
        (folder / name).write_bytes(data)
        orthanc.upload(data)
    unknown = encode(with_new_uids(testdata_file("CT_small.dcm"), study=generate_uid()))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEDSEARCH_")},
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "200",
        "MEDSEARCH_DATA_DIR": str(root / "data"),
        "MEDSEARCH_MODEL": str(tiny_model),
        "MEDSEARCH_WORKERS": "0",
    }
    proc = index(env, str(folder))
    assert proc.returncode == 0, proc.stderr
    return {"folder": folder, "env": env, "unknown": unknown, "data": root / "data"}


def _instances(orthanc: Orthanc) -> set[str]:
    with orthanc.client() as http:
        return set(http.get("/instances").json())


def _sr_in_study(orthanc: Orthanc, study_uid: str, sop_uid: str) -> hd.sr.ComprehensiveSR:
    """The SR as Orthanc lists it under the query's study (found by QIDO-RS, fetched by WADO-RS)."""
    with orthanc.client() as http:
        series = http.get(f"/dicom-web/studies/{study_uid}/series").json()
        modalities = {s["0020000E"]["Value"][0]: s["00080060"]["Value"][0] for s in series}
        assert "SR" in modalities.values(), modalities
        found = http.post("/tools/find", json={"Level": "Instance", "Query": {"SOPInstanceUID": sop_uid}}).json()
        assert len(found) == 1, found
        data = http.get(f"/instances/{found[0]}/file").content
    sr = hd.sr.srread(pydicom.filebase.DicomBytesIO(data))
    assert sr.StudyInstanceUID == study_uid and modalities[sr.SeriesInstanceUID] == "SR"
    return sr


def _evidence(sr: hd.sr.ComprehensiveSR) -> set[str]:
    return {ref[2] for ref in sr.get_evidence()}


@pytest.mark.e2e
def test_cli_export_by_cstore_lands_under_the_query_study(orthanc: Orthanc, corpus: dict[str, Any]) -> None:
    query = corpus["folder"] / "CT_small.dcm"
    env = {**corpus["env"], "MEDSEARCH_EXPORT_AE": f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"}
    proc = run(["search", "--image", str(query), "-k", "10", "--export", "sr", "--json"], env)
    report = json.loads(proc.stdout)
    export, hits = report["export"], report["hits"]
    header = pydicom.dcmread(query, stop_before_pixels=True)
    assert export["sent"] == [{"route": "cstore", "target": env["MEDSEARCH_EXPORT_AE"]}]
    assert export["matches"] == len(hits) == len(FILES) and export["study_instance_uid"] == header.StudyInstanceUID
    sr = _sr_in_study(orthanc, str(header.StudyInstanceUID), export["sop_instance_uid"])
    assert _evidence(sr) == {h["sop_instance_uid"] for h in hits} | {str(header.SOPInstanceUID)}
    assert (sr.PatientID, sr.PatientName) == (header.PatientID, header.PatientName)  # from the file, not the DB

    text = run(["search", "--image", str(query), "-k", "10", "--export", "sr"], env).stdout
    assert f"SR {export['sop_instance_uid']} ({len(hits)} matches) stored in the query's study by cstore" in text
    png = corpus["folder"].parent / "query.png"
    PILImage.new("L", (32, 32)).save(png)
    refused = run(["search", "--image", str(png), "--export", "sr"], env, check=False)
    assert refused.returncode != 0 and "export_needs_dicom" in refused.stderr and "Traceback" not in refused.stderr


def _app(corpus: dict[str, Any], **extra: Any) -> TestClient:
    settings = ServiceSettings(data_dir=corpus["data"], model=str(corpus["env"]["MEDSEARCH_MODEL"]), workers=0, **extra)
    return TestClient(create_app(settings))


def _stow(orthanc: Orthanc, **extra: Any) -> dict[str, Any]:
    auth = {"dicomweb_auth": "basic", "dicomweb_user": USER, "dicomweb_password": PASSWORD}
    return {"export_dicomweb": orthanc.dicomweb, **auth, **extra}


def test_api_export_by_stow_with_auth_by_id_and_without_uids(orthanc: Orthanc, corpus: dict[str, Any]) -> None:
    query = (corpus["folder"] / "MR_small.dcm").read_bytes()
    header = pydicom.dcmread(pydicom.filebase.DicomBytesIO(query), stop_before_pixels=True)
    with _app(corpus, **_stow(orthanc)) as api:
        found = api.post("/v1/search/image", files={"file": ("q.dcm", query)}, data={"k": "1"}).json()
        image_id = found["hits"][0]["id"]
        hits = api.get(f"/v1/images/{image_id}/similar", params={"k": 5}).json()["hits"]
        answer = api.post(f"/v1/images/{image_id}/export/sr", data={"k": "5"})
        assert answer.status_code == 200, answer.text
        export = answer.json()
        assert export["sent"] == [{"route": "stow", "target": orthanc.dicomweb}] and export["matches"] == 5
        sr = _sr_in_study(orthanc, str(header.StudyInstanceUID), export["sop_instance_uid"])
        assert _evidence(sr) == {h["sop_instance_uid"] for h in hits} | {str(header.SOPInstanceUID)}
        before = _instances(orthanc)
        again = api.post(f"/v1/images/{image_id}/export/sr", data={"k": "5"}).json()  # a retry
        assert again["sop_instance_uid"] == export["sop_instance_uid"] and _instances(orthanc) == before

        private = api.post(f"/v1/images/{image_id}/export/sr", data={"k": "5", "include_uids": "false"})
        assert private.status_code == 200 and private.json()["include_uids"] is False
        sr = _sr_in_study(orthanc, str(header.StudyInstanceUID), private.json()["sop_instance_uid"])
        assert _evidence(sr) == {str(header.SOPInstanceUID)}
        written = sr.to_json()
        for hit in hits:  # other patients' studies: none of their UIDs is in this patient's study
            assert hit["sop_instance_uid"] not in written and hit["study_instance_uid"] not in written


def test_bad_exports_are_clear_and_store_nothing(orthanc: Orthanc, corpus: dict[str, Any]) -> None:
    ct = (corpus["folder"] / "CT_small.dcm").read_bytes()
    before = _instances(orthanc)
    with _app(corpus) as api:  # not configured
        off = api.post("/v1/export/sr", files={"file": ("q.dcm", ct)})
        assert (off.status_code, off.json()["code"]) == (503, "export_off")
        assert "MEDSEARCH_EXPORT_AE" in off.json()["message"]
    key = "export-test-key-0001"
    with _app(corpus, **_stow(orthanc), api_keys=f"tester:{hash_key(key)}") as api:
        assert api.post("/v1/export/sr", files={"file": ("q.dcm", ct)}).status_code == 401
        auth = {"Authorization": f"Bearer {key}"}
        png = _png()
        refused = api.post("/v1/export/sr", files={"file": ("q.png", png)}, headers=auth)
        assert (refused.status_code, refused.json()["code"]) == (400, "export_needs_dicom")
        unknown = api.post("/v1/export/sr", files={"file": ("q.dcm", corpus["unknown"])}, headers=auth)
        assert (unknown.status_code, unknown.json()["code"]) == (409, "study_not_in_pacs")
    down = f"ORTHANC@127.0.0.1:{free_port()}"  # nobody listens there
    with _app(corpus, export_ae=down, export_timeout=5) as api:
        failed = api.post("/v1/export/sr", files={"file": ("q.dcm", ct)})
        assert (failed.status_code, failed.json()["code"]) == (502, "export_failed")
        assert "nothing was sent" in failed.json()["message"] and "retrying is safe" in failed.json()["message"]
    assert _instances(orthanc) == before


def _png() -> bytes:
    buffer = pydicom.filebase.DicomBytesIO()
    PILImage.new("L", (32, 32)).save(buffer, format="PNG")
    return bytes(buffer.getvalue())


class _Scp:
    """A pynetdicom Storage + Find SCP that has every study, and refuses or stalls C-STORE."""

    def __init__(self, mode: str) -> None:
        from pynetdicom import AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import (  # type: ignore[attr-defined]
            StudyRootQueryRetrieveInformationModelFind,
        )

        self.release = threading.Event()
        self.stores = 0
        ae = AE(ae_title="SLOWPACS")
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)

        def on_find(event: Any) -> Iterator[tuple[int, Any]]:
            yield 0xFF00, event.identifier
            yield 0x0000, None

        def on_store(event: Any) -> int:
            self.stores += 1
            if mode == "slow":
                self.release.wait(60)
            return 0xA700 if mode == "refuse" else 0x0000

        self.server = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_FIND, on_find), (evt.EVT_C_STORE, on_store)]
        )
        self.address = f"SLOWPACS@127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()


class _HangingDicomweb:
    """A DICOMweb server that never answers (until released)."""

    def __init__(self) -> None:
        release = self.release = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                release.wait(60)

            do_POST = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dicom-web"

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class _RefusingStow:
    """A DICOMweb server that has every study (QIDO-RS answers) but refuses every STOW-RS (409)."""

    def __init__(self) -> None:
        self.stows = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                study = self.path.partition("StudyInstanceUID=")[2].partition("&")[0] or "1.2.3"
                self._answer(200, json.dumps([{"0020000D": {"vr": "UI", "Value": [study]}}]).encode())

            def do_POST(self) -> None:
                outer.stows += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer(409, b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dicom-web"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_an_export_stored_by_one_route_only_says_so_and_a_retry_stores_it_once(
    orthanc: Orthanc, corpus: dict[str, Any]
) -> None:
    """Both routes configured, C-STORE stores, STOW-RS is refused: the error names the route that stored the SR
    (nothing reported as sent that was not); the retry, once STOW-RS works, sends the same instance, kept once."""
    ct = (corpus["folder"] / "CT_small.dcm").read_bytes()
    ae = f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"
    refusing = _RefusingStow()
    before = _instances(orthanc)
    try:
        with _app(corpus, export_ae=ae, export_dicomweb=refusing.url, dicomweb_retries=0, export_timeout=5) as api:
            half = api.post("/v1/export/sr", files={"file": ("q.dcm", ct)}, data={"k": "3"})
        assert (half.status_code, half.json()["code"]) == (502, "export_failed"), half.text
        assert f"the SR was stored by cstore {ae}, but not by stow" in half.json()["message"]
        assert refusing.stows == 1
        stored = _instances(orthanc) - before
        assert len(stored) == 1  # C-STORE did store it: the message says so
    finally:
        refusing.stop()
    with _app(corpus, **_stow(orthanc, export_ae=ae)) as api:
        retry = api.post("/v1/export/sr", files={"file": ("q.dcm", ct)}, data={"k": "3"})
    assert retry.status_code == 200, retry.text
    assert [s["route"] for s in retry.json()["sent"]] == ["cstore", "stow"]
    assert _instances(orthanc) - before == stored  # both routes, the same instance: stored once


def test_a_refusing_or_slow_pacs_is_a_bounded_clear_error(corpus: dict[str, Any]) -> None:
    ct = (corpus["folder"] / "CT_small.dcm").read_bytes()
    refusing, slow, hanging = _Scp("refuse"), _Scp("slow"), _HangingDicomweb()
    try:
        with _app(corpus, export_ae=refusing.address, export_timeout=5) as api:
            answer = api.post("/v1/export/sr", files={"file": ("q.dcm", ct)})
            assert (answer.status_code, answer.json()["code"]) == (502, "export_failed") and refusing.stores == 1
            assert "refused the SR (status 0xA700); nothing was stored" in answer.json()["message"]
        for settings, what in (
            ({"export_ae": slow.address}, "no answer in 1 s"),
            ({"export_dicomweb": hanging.url, "dicomweb_retries": 0}, "timed out"),
        ):
            with _app(corpus, export_timeout=1, **settings) as api:
                start = time.monotonic()
                answer = api.post("/v1/export/sr", files={"file": ("q.dcm", ct)})
                took = time.monotonic() - start
                assert (answer.status_code, answer.json()["code"]) == (502, "export_failed"), answer.text
                assert what in answer.json()["message"]
                assert took < 30, took  # the PACS holds on for 60 s: the export gave up long before
        assert slow.stores == 1
    finally:
        refusing.stop()
        slow.stop()
        hanging.stop()


def test_a_study_the_pacs_lacks_is_refused_by_cstore_too_unless_the_check_is_off(
    orthanc: Orthanc, corpus: dict[str, Any]
) -> None:
    """The C-FIND study check (the STOW-RS one is above): refused, nothing stored; MEDSEARCH_EXPORT_CHECK_STUDY=false
    sends the SR anyway (the PACS then holds a study of just the SR)."""
    ae = f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"
    study = str(
        pydicom.dcmread(pydicom.filebase.DicomBytesIO(corpus["unknown"]), stop_before_pixels=True).StudyInstanceUID
    )
    before = _instances(orthanc)
    with _app(corpus, export_ae=ae) as api:
        refused = api.post("/v1/export/sr", files={"file": ("q.dcm", corpus["unknown"])}, data={"k": "3"})
    assert (refused.status_code, refused.json()["code"]) == (409, "study_not_in_pacs"), refused.text
    assert study in refused.json()["message"] and "MEDSEARCH_EXPORT_CHECK_STUDY=false" in refused.json()["message"]
    assert _instances(orthanc) == before
    with _app(corpus, export_ae=ae, export_check_study=False) as api:
        sent = api.post("/v1/export/sr", files={"file": ("q.dcm", corpus["unknown"])}, data={"k": "3"})
    assert sent.status_code == 200, sent.text
    _sr_in_study(orthanc, study, sent.json()["sop_instance_uid"])
