"""A live `medsearch serve` for tests: start it on a free loopback port, talk to it with httpx, stop it by PID.

The fixtures here (a module's indexed samples and the keyed server over them) are registered for every test
file by `pytest_plugins` in tests/conftest.py, so no test module imports fixtures from another."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.config import hash_key
from indexer.pipeline import IndexOptions, run_index
from retrieval.collection import Collection
from retrieval.labels import load_labels
from tests.conftest import REPO, SAMPLES, make_settings, testdata_file

MEDSEARCH = str(Path(sys.executable).parent / "medsearch")
KEY = "medsearch-test-key-3f9c1e"  # the key the test client sends; the server only knows its hash
KEY_ID = "tester"
OTHER_KEY = "x" * 40  # a second configured key
MAX_UPLOAD = 4 * 1024 * 1024
VIEWER = "http://viewer/?study={study_instance_uid}"
SAMPLE_NAMES = sorted(p.name for p in SAMPLES.glob("*.dcm"))
EXTRA_NAMES = ["SC_rgb.dcm", "ExplVR_BigEnd.dcm", "rtdose_1frame.dcm", "mlut_18.dcm"]  # OT, US, RTDOSE, OT
TWO_FRAME = "eCT_Supplemental.dcm"  # indexed with frames="all": two images of one study and series
N_IMAGES = len(SAMPLE_NAMES) + len(EXTRA_NAMES) + 2
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# -- servers ------------------------------------------------------------------------------------------


@dataclass
class Server:
    """One running `medsearch serve` process and where its output goes."""

    proc: subprocess.Popen[bytes]
    url: str
    port: int
    env: dict[str, str]
    data_dir: Path
    logs: Path

    def stderr(self) -> str:
        return (self.logs / "stderr.log").read_text(errors="replace")

    def stdout(self) -> str:
        return (self.logs / "stdout.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def service_env(data_dir: Path, model: Path | str, **extra: str) -> dict[str, str]:
    """The environment of a server or CLI run: no MEDSEARCH_ variable leaks in from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSEARCH_")}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_VERBOSITY="error",
        COLUMNS="400",
        MEDSEARCH_DATA_DIR=str(data_dir),
        MEDSEARCH_MODEL=str(model),
        MEDSEARCH_HOST="127.0.0.1",
        MEDSEARCH_WORKERS="0",
        MEDSEARCH_MAX_UPLOAD_BYTES=str(MAX_UPLOAD),
        MEDSEARCH_VIEWER_URL_TEMPLATE=VIEWER,
        MEDSEARCH_REFRESH_SECONDS="0.5",
        MEDSEARCH_API_KEYS="",
    )
    env.update(extra)
    return env


def _check_response(response: httpx.Response) -> None:
    """Every response: never a stack trace; every error is {code, message}."""
    response.read()
    assert b"Traceback" not in response.content, response.text[:2000]
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("code"), str) and isinstance(body.get("message"), str), body


def make_client(url: str, key: str | None = None, timeout: float = 120.0) -> httpx.Client:
    """An httpx client for a server, sending `key` as a bearer token when given."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(
        base_url=url, headers=headers, timeout=timeout, event_hooks={"response": [_check_response]}, trust_env=False
    )


@contextmanager
def running_server(
    env: dict[str, str],
    logs: Path,
    ready: Callable[[httpx.Response], bool],
    timeout: float = 120.0,
    args: tuple[str, ...] = (),
) -> Iterator[Server]:
    """Start `medsearch serve` (with `args`), wait until `ready(GET /readyz)`, always stop it by its PID afterwards."""
    port = free_port()
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "stdout.log", "wb") as out, open(logs / "stderr.log", "wb") as err:
        proc = subprocess.Popen(
            [MEDSEARCH, "serve", "--port", str(port), *args],
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
    server = Server(proc, f"http://127.0.0.1:{port}", port, env, Path(env["MEDSEARCH_DATA_DIR"]), logs)
    try:
        deadline = time.monotonic() + timeout
        hooks = {"response": [_check_response]}
        with httpx.Client(base_url=server.url, timeout=5.0, trust_env=False, event_hooks=hooks) as probe:
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"server exited with {proc.returncode}:\n{server.stderr()[-4000:]}")
                try:
                    if ready(probe.get("/readyz")):
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"server not ready after {timeout} s:\n{server.stderr()[-4000:]}")
                time.sleep(0.2)
        yield server
    finally:
        server.stop()


def worker_pids(pid: int) -> list[int]:
    """The serving children of uvicorn's parent process (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def worker_holding(client_port: int, server_port: int, workers: list[int]) -> int | None:
    """The worker process holding the server's end of the connection from `client_port` (by its socket inode)."""
    inodes = [
        fields[9]
        for fields in (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
        if int(fields[1].split(":")[1], 16) == server_port and int(fields[2].split(":")[1], 16) == client_port
    ]
    targets = {f"socket:[{inode}]" for inode in inodes}
    for pid in workers:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with suppress(OSError):
                if os.readlink(fd) in targets:
                    return pid
    return None


def is_ready(response: httpx.Response) -> bool:
    return response.status_code == 200


# -- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api")


@pytest.fixture(scope="module")
def main_data(root: Path, tiny_model: Path) -> Path:
    """The samples (with labels) plus pydicom files of other modalities, indexed with the library."""
    extra = root / "extra"
    extra.mkdir()
    for name in EXTRA_NAMES:
        shutil.copy(testdata_file(name), extra / name)
    two_frame = root / "two-frame"
    two_frame.mkdir()
    shutil.copy(testdata_file(TWO_FRAME), two_frame / TWO_FRAME)
    data_dir = root / "data"
    collection = Collection(make_settings(data_dir, tiny_model))
    try:
        labels = load_labels(SAMPLES / "labels.csv")
        first = run_index(collection, [SAMPLES, extra], IndexOptions(workers=0, labels=labels))
        second = run_index(collection, [two_frame], IndexOptions(workers=0, frames="all"))
    finally:
        collection.close()
    assert (first.indexed, first.failed, second.indexed, second.failed) == (N_IMAGES - 2, 0, 2, 0)
    pristine = root / "pristine"  # for the freshness server, copied before any server touches the folder
    shutil.copytree(data_dir, pristine)
    return data_dir


@pytest.fixture(scope="module")
def main_server(root: Path, main_data: Path, tiny_model: Path) -> Iterator[Server]:
    """The server most tests share: API keys configured, 4 MB upload limit, viewer links."""
    env = service_env(
        main_data, tiny_model, MEDSEARCH_API_KEYS=f"{KEY_ID}:{hash_key(KEY)}, other:{hash_key(OTHER_KEY)}"
    )
    with running_server(env, root / "logs-main", is_ready) as server:
        yield server


@pytest.fixture(scope="module")
def client(main_server: Server) -> Iterator[httpx.Client]:
    with make_client(main_server.url, KEY) as c:
        yield c


@pytest.fixture(scope="module")
def anon(main_server: Server) -> Iterator[httpx.Client]:
    """A client of the main server that sends no key."""
    with make_client(main_server.url) as c:
        yield c


@pytest.fixture(scope="module")
def everything(client: httpx.Client) -> list[dict[str, Any]]:
    """Every indexed image, as text-search hits (the API has no listing route)."""
    hits: list[dict[str, Any]] = client.post("/v1/search/text", json={"text": "any image", "k": 1000}).json()["hits"]
    assert len(hits) == N_IMAGES
    return hits


@pytest.fixture(scope="module")
def ids(everything: list[dict[str, Any]]) -> dict[str, int]:
    """Image id by source file name (the two-frame file maps to one of its two images)."""
    return {Path(h["source"]).name: h["id"] for h in everything}


def search_image(client: httpx.Client, data: bytes, name: str = "query.dcm", **form: Any) -> httpx.Response:
    """POST /v1/search/image with a multipart upload and form fields (lists repeat the field)."""
    fields = {k: [str(x) for x in v] if isinstance(v, list) else str(v) for k, v in form.items()}
    return client.post("/v1/search/image", files={"file": (name, data, "application/octet-stream")}, data=fields)


def hit_ids(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [h["id"] for h in response.json()["hits"]]


def assert_healthy(client: httpx.Client) -> None:
    """Liveness answers and a normal search still works."""
    assert client.get("/healthz").json() == {"status": "ok"}
    response = client.post("/v1/search/text", json={"text": "chest radiograph", "k": 3})
    assert response.status_code == 200 and len(response.json()["hits"]) == 3


def cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MEDSEARCH, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
