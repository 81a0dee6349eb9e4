"""Shared fixtures: offline stand-in models, real DICOM corpora from installed packages, temp collections."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from retrieval.collection import Collection
from retrieval.encoders.standin import build_standin_model
from retrieval.settings import Settings
from tests import backends
from tests.backends import BACKENDS, Backend, PostgresServer

# Shared fixtures live in helper modules, registered here for every test file (never imported from a test module):
# tests/service.py (a live `medsearch serve` over indexed samples), tests/commands.py (the `medsearch` command),
# tests/browser.py (Chromium pages and the servers they load).
pytest_plugins = ["tests.service", "tests.commands", "tests.browser"]

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data" / "samples"


def pydicom_roots() -> list[Path]:
    """Folders of real test DICOMs shipped by the pydicom and pydicom-data packages."""
    import pydicom.data

    roots = [Path(pydicom.data.__file__).parent / "test_files"]
    try:
        import data_store  # the pydicom-data package

        roots.append(Path(data_store.__file__).parent / "data")
    except ImportError:  # pragma: no cover - dev extra always installs it
        pass
    return roots


def testdata_file(name: str) -> Path:
    """One named file from the installed test corpora (no network lookups)."""
    for root in pydicom_roots():
        hits = sorted(root.rglob(name))
        if hits:
            return hits[0]
    raise FileNotFoundError(name)


testdata_file.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SigLIP of MedSigLIP's classes, built offline once per session."""
    return build_standin_model(tmp_path_factory.mktemp("models") / "tiny-siglip")


def make_settings(data_dir: Path, model: Path, **extra: object) -> Settings:
    """Settings for a temp data folder and a local model (no environment leakage), on the current backend."""
    fields = {**backends.current.settings(data_dir), **extra}
    return Settings(data_dir=data_dir, model=str(model), workers=0, batch_size=8, **fields)  # type: ignore[arg-type]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests that use `backend` (the `collection` fixture does) run on every backend, or the ones named by
    `@pytest.mark.backends(...)`."""
    if "backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("backends")
    names = marker.args if marker and marker.args else BACKENDS
    # PostgreSQL and Milvus Lite are servers the tests start: those variants are `peers`, outside `make test-fast`
    params = [name if name == "sqlite-faiss" else pytest.param(name, marks=pytest.mark.peers) for name in names]
    metafunc.parametrize("backend", params, indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that asks for the PostgreSQL server itself, or for Chromium, is a `peers` test too."""
    for item in items:
        if {"postgres_server", "chromium"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.peers)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (fails, never skips, when PostgreSQL is not installed)."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The store/index backend of this test: make_settings (and so `collection`) use it until it ends."""
    name = getattr(request, "param", "sqlite-faiss")
    server = request.getfixturevalue("postgres_server") if name == "postgres-faiss" else None
    chosen = Backend(name, server)
    backends.current = chosen
    yield chosen
    backends.current = backends.DEFAULT


@pytest.fixture
def collection(tmp_path: Path, tiny_model: Path, backend: Backend) -> Iterator[Collection]:
    """A fresh, empty collection using the tiny model, on each backend (see `backend`)."""
    col = Collection(make_settings(tmp_path / "data", tiny_model))
    yield col
    col.close()


@pytest.fixture
def sample_dir(tmp_path: Path) -> Path:
    """A writable copy of the repo's sample images."""
    target = tmp_path / "samples"
    shutil.copytree(SAMPLES, target)
    return target


@pytest.fixture(scope="session")
def tiny_gemma(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Gemma 3 (MedGemma's classes: Gemma3ForConditionalGeneration, Gemma3Processor), built offline."""
    from retrieval.summarize.standin import build_standin_summarizer

    return build_standin_summarizer(tmp_path_factory.mktemp("models") / "tiny-gemma3")


@contextmanager
def running_process(
    argv: list[str],
    env: dict[str, str],
    ready_url: str,
    log_path: Path,
    timeout: float = 120.0,
    cwd: Path | None = None,
) -> Iterator[None]:
    """Start a server process, wait until `ready_url` answers 200, and always stop it by its PID afterwards.

    Fails the test (with the end of its log) when the process exits early or is not ready in time.
    """
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{argv[0]} {argv[1]} exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{argv[0]} {argv[1]} not ready after {timeout:.0f} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
