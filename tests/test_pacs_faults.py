"""`medsearch pull` from a misbehaving DICOMweb server: 5xx, timeouts, corrupt instances, a flaky one that recovers."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from retrieval.sources.base import SourceRef
from retrieval.sources.dicomweb import DicomwebConfig, instance_url
from retrieval.sources.pull import DicomwebSource, PullQuery
from tests.commands import run
from tests.conftest import testdata_file

STUDY, SERIES = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"
INSTANCES = {
    "1.2.826.0.1.3680043.8.498.10": "good",
    "1.2.826.0.1.3680043.8.498.11": "flaky",  # one 503, then fine
    "1.2.826.0.1.3680043.8.498.12": "broken",  # always 500
    "1.2.826.0.1.3680043.8.498.13": "slow",  # answers after the client's timeout
    "1.2.826.0.1.3680043.8.498.14": "corrupt",  # 200 with bytes that are not DICOM
}
BOUNDARY = "medsearch-test-boundary"


class FaultyDicomweb(BaseHTTPRequestHandler):
    """QIDO-RS lists one study, one series, five instances; WADO-RS misbehaves per instance."""

    hits: ClassVar[Counter[str]] = Counter()
    authorization: ClassVar[set[str]] = set()
    qido_down: ClassVar[bool] = False
    payload: ClassVar[dict[str, bytes]] = {
        "good": testdata_file("CT_small.dcm").read_bytes(),
        "flaky": testdata_file("MR_small.dcm").read_bytes(),
    }

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def _json(self, items: list[dict[str, object]]) -> None:
        body = json.dumps(items).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _status(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _instance(self, data: bytes) -> None:
        body = (
            f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data
            + f"\r\n--{BOUNDARY}--\r\n".encode()
        )
        self.send_response(200)
        self.send_header("Content-Type", f'multipart/related; type="application/dicom"; boundary={BOUNDARY}')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.authorization.add(self.headers.get("Authorization", ""))
        path = self.path.split("?")[0].removeprefix("/dicom-web/")
        parts = path.split("/")
        if self.qido_down and len(parts) < 6:
            return self._status(500)
        if "offset=" in self.path and "offset=0" not in self.path:
            return self._json([])  # one page holds everything
        if parts == ["studies"]:
            return self._json([{"0020000D": {"vr": "UI", "Value": [STUDY]}}])
        if parts == ["studies", STUDY, "series"]:
            return self._json([{"0020000E": {"vr": "UI", "Value": [SERIES]}}])
        if parts == ["studies", STUDY, "series", SERIES, "instances"]:
            return self._json([{"00080018": {"vr": "UI", "Value": [sop]}} for sop in INSTANCES])
        if len(parts) == 6 and parts[5] in INSTANCES:
            kind = INSTANCES[parts[5]]
            self.hits[kind] += 1
            if kind == "good" or (kind == "flaky" and self.hits[kind] > 1):
                return self._instance(self.payload[kind])
            if kind == "flaky":
                return self._status(503)
            if kind == "broken":
                return self._status(500)
            if kind == "slow":
                time.sleep(2.0)
                return self._instance(self.payload["good"])
            return self._instance(b"\x00not a dicom file at all\xff" * 40)
        return self._status(404)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FaultyDicomweb)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/dicom-web"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.e2e
def test_pull_survives_a_misbehaving_server(server: str, tiny_model: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "200",
        "MEDSEARCH_DATA_DIR": str(tmp_path / "data"),
        "MEDSEARCH_MODEL": str(tiny_model),
        "MEDSEARCH_WORKERS": "0",
        "MEDSEARCH_DICOMWEB_TIMEOUT": "0.5",
        "MEDSEARCH_DICOMWEB_RETRIES": "2",
        "MEDSEARCH_DICOMWEB_BACKOFF": "0.05",
    }
    FaultyDicomweb.hits.clear()
    proc = run(["pull", "--dicomweb", server, "--json"], env, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "3 instance(s) failed" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    report = json.loads(proc.stdout)
    assert report["found"] == 5 and report["fetched"] == 2 and report["indexed"] == 2 and report["failed"] == 3
    reasons = {f["source"].rsplit("/", 1)[1]: (f["code"], f["reason"]) for f in report["failures"]}
    by_kind = {INSTANCES[sop]: why for sop, why in reasons.items()}
    assert set(by_kind) == {"broken", "slow", "corrupt"}
    assert by_kind["broken"][0] == "dicomweb_error" and "HTTP 500" in by_kind["broken"][1]
    assert "after 3 attempts" in by_kind["broken"][1]
    assert by_kind["slow"][0] == "dicomweb_error" and "timed out after 3 attempts" in by_kind["slow"][1]
    assert by_kind["corrupt"][0] == "decode_error" and "not a readable DICOM" in by_kind["corrupt"][1]
    assert FaultyDicomweb.hits == Counter(good=1, flaky=2, broken=3, slow=3, corrupt=1)  # retried 5xx/timeouts only

    listed = json.loads(run(["failures", "--json"], env).stdout)
    assert {f["source"].rsplit("/", 1)[1] for f in listed} == set(reasons)

    assert FaultyDicomweb.authorization == {""}  # no auth asked for, none sent

    FaultyDicomweb.hits.clear()
    FaultyDicomweb.authorization.clear()
    bearer = ["--auth", "bearer", "--token-env", "PACS_TOKEN"]
    again = run(["pull", "--dicomweb", server, "--json", *bearer], {**env, "PACS_TOKEN": "t0ken"}, check=False)
    second = json.loads(again.stdout)
    assert again.returncode == 2 and second["already_indexed"] == 2 and second["failed"] == 3  # failures retried
    assert FaultyDicomweb.hits["good"] == 0 and FaultyDicomweb.hits["flaky"] == 0
    assert FaultyDicomweb.authorization == {"Bearer t0ken"}


@pytest.mark.e2e
def test_a_server_that_cannot_list_is_a_clear_error(server: str, tiny_model: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MEDSEARCH_DATA_DIR": str(tmp_path / "data"),
        "MEDSEARCH_MODEL": str(tiny_model),
        "MEDSEARCH_DICOMWEB_RETRIES": "1",
        "MEDSEARCH_DICOMWEB_BACKOFF": "0.01",
    }
    FaultyDicomweb.qido_down = True
    try:
        proc = run(["pull", "--dicomweb", server], env, check=False)
    finally:
        FaultyDicomweb.qido_down = False
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "QIDO-RS studies search: HTTP 500" in proc.stderr and "after 2 attempts" in proc.stderr


def test_fetches_are_concurrent_bounded_and_in_order() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.inflight = self.peak = 0
            self.config = DicomwebConfig("http://pacs.invalid/dicom-web")

        def instance_bytes(self, study: str, series: str, sop: str, max_bytes: int) -> bytes:
            with self.lock:
                self.inflight += 1
                self.peak = max(self.peak, self.inflight)
            time.sleep(0.2)
            with self.lock:
                self.inflight -= 1
            return sop.encode()

    client = Recorder()
    source = DicomwebSource(client, PullQuery(), workers=3, max_bytes=1000)  # type: ignore[arg-type]
    base = client.config.url
    refs = [SourceRef(f"u{i}", 0, 0.0, "dicomweb", instance_url(base, "st", "se", str(i))) for i in range(12)]
    try:
        items = list(source.fetch(refs))
    finally:
        source.close()
    assert [item.data for item in items] == [str(i).encode() for i in range(12)]
    assert client.peak == 3  # three at a time, never more
