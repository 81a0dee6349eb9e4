"""A real Orthanc (Debian's orthanc + orthanc-dicomweb) for the PACS tests, on free loopback ports."""

from __future__ import annotations

import io
import json
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
from pydicom.uid import generate_uid

ORTHANC = "Orthanc"
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Orthanc:
    """A running Orthanc: its ports, credentials and process."""

    process: subprocess.Popen[bytes]
    http_port: int
    dicom_port: int
    auth: tuple[str, str] | None
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.base}/dicom-web"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, auth=self.auth, timeout=30)

    def upload(self, data: bytes) -> str:
        """POST /instances; returns Orthanc's instance id."""
        with self.client() as http:
            answer = http.post("/instances", content=data, headers={"content-type": "application/dicom"})
        answer.raise_for_status()
        return str(answer.json()["ID"])

    def stop(self) -> None:
        """Stop by PID (TERM, then KILL)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_orthanc(
    folder: Path,
    modalities: dict[str, tuple[str, int]] | None = None,
    users: dict[str, str] | None = None,
    verbose: bool = False,
) -> Orthanc:
    """Start Orthanc with the DICOMweb plugin, storage in `folder`, loopback-only; fails if it is not installed.
    `verbose`: its log names every HTTP request it served (see `served`)."""
    binary = shutil.which(ORTHANC)
    assert binary, "Orthanc is not installed: apt-get install orthanc orthanc-dicomweb (.ci/run does it)"
    assert PLUGIN.exists(), f"the Orthanc DICOMweb plugin is missing ({PLUGIN}): apt-get install orthanc-dicomweb"
    folder.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "MEDSEARCH_TEST",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "Plugins": [str(PLUGIN)],
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "DicomServerEnabled": True,
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": bool(users),
        "RegisteredUsers": users or {},
        "DicomModalities": {name: [aet, "127.0.0.1", port] for name, (aet, port) in (modalities or {}).items()},
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
        "ConcurrentJobs": 1,
        "HttpThreadsCount": 4,
        "DicomScuTimeout": 10,
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = folder / "orthanc.log"
    with open(log, "wb") as out:
        flags = ["--verbose"] if verbose else []
        process = subprocess.Popen([binary, str(folder / "orthanc.json"), *flags], stdout=out, stderr=subprocess.STDOUT)
    auth = next(iter(users.items())) if users else None
    server = Orthanc(process, http_port, dicom_port, auth, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"Orthanc exited: {log.read_text()[-2000:]}"
        try:
            with server.client() as http:
                if http.get("/system").status_code == 200:
                    return server
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    server.stop()
    raise AssertionError(f"Orthanc did not start: {log.read_text()[-2000:]}")


def served(server: Orthanc, suffix: str = "") -> list[str]:
    """The paths of the GET requests a verbose Orthanc served so far (in order), those ending with `suffix`."""
    paths = []
    for line in server.log.read_text(errors="replace").splitlines():
        _, marker, path = line.partition("(http) GET ")
        if marker and path.strip().endswith(suffix):
            paths.append(path.strip())
    return paths


def retrieved_sops(server: Orthanc) -> list[str]:
    """SOP Instance UIDs of the WADO-RS instance retrievals a verbose Orthanc served (repeats kept)."""
    out = []
    for path in served(server):
        parts = path.split("?")[0].strip("/").split("/")
        if len(parts) == 7 and parts[0] == "dicom-web" and parts[5] == "instances":
            out.append(parts[6])
    return out


def with_new_uids(path: Path, study: str | None = None) -> pydicom.Dataset:
    """A real file with fresh SOP (and optionally Study/Series) UIDs; pixel data left exactly as encoded."""
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study or ds.get("StudyInstanceUID") or generate_uid()
    if "SeriesInstanceUID" not in ds or study:
        ds.SeriesInstanceUID = generate_uid()
    return ds


def encode(ds: pydicom.Dataset) -> bytes:
    """A dataset as Part 10 bytes."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()
