"""Chromium pages for tests: Debian's Chromium through Playwright, and `medsearch serve` on the indexed samples.

The fixtures here are registered for every test file by `pytest_plugins` in tests/conftest.py, so the browser
test files share them without importing fixtures from one another."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, sync_playwright

from api.config import hash_key
from indexer.pipeline import IndexOptions, run_index
from retrieval.collection import Collection
from retrieval.labels import load_labels
from tests.conftest import REPO, SAMPLES, make_settings, running_process

CHROMIUM = Path(os.environ.get("MEDSEARCH_CHROMIUM", "/usr/bin/chromium"))  # Debian's package
KEY = "browser-test-key-0123456789"
VIEWER = "https://pacs.example/viewer?StudyInstanceUIDs={study_instance_uid}"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def chromium() -> Path:
    """The browser binary; a missing one fails the test (CI installs it), before any server starts."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's Chromium with `apt-get install -y chromium`")
    return CHROMIUM


@pytest.fixture(scope="module")
def indexed(chromium: Path, tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> tuple[Path, Path]:
    """Two identical data folders with data/samples indexed by the tiny model (one per server)."""
    root = tmp_path_factory.mktemp("browser")
    data_dir = root / "data"
    collection = Collection(make_settings(data_dir, tiny_model))
    try:
        summary = run_index(collection, [SAMPLES], IndexOptions(labels=load_labels(SAMPLES / "labels.csv")))
    finally:
        collection.close()
    assert summary.indexed == 10 and summary.failed == 0, summary
    # copied while no process has it open, so the two servers never share a folder
    shutil.copytree(data_dir, root / "keyed" / "data")
    return data_dir, root / "keyed" / "data"


@contextmanager
def serve_samples(data_dir: Path, model: Path, **extra_env: str) -> Iterator[str]:
    """Run `medsearch serve` on a free loopback port until ready; stop it by its PID afterwards."""
    port = free_port()
    env = {
        **os.environ,
        "MEDSEARCH_DATA_DIR": str(data_dir),
        "MEDSEARCH_MODEL": str(model),
        "MEDSEARCH_HOST": "127.0.0.1",
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("MEDSEARCH_API_KEYS", None)
    env.update(extra_env)
    log_path = data_dir.parent / f"server-{port}.log"
    medsearch = Path(sys.executable).parent / "medsearch"
    base = f"http://127.0.0.1:{port}"
    with running_process([str(medsearch), "serve", "--port", str(port)], env, f"{base}/readyz", log_path):
        yield base


@pytest.fixture(scope="module")
def server(indexed: tuple[Path, Path], tiny_model: Path) -> Iterator[str]:
    """The service without API keys; yields its base URL."""
    with serve_samples(indexed[0], tiny_model) as base:
        yield base


@pytest.fixture
def keyed_server(indexed: tuple[Path, Path], tiny_model: Path) -> Iterator[str]:
    """The service on a copy of the collection, requiring KEY as a bearer token, with viewer links."""
    data_dir = indexed[1]
    keys = f"browser-test:{hash_key(KEY)}"
    with serve_samples(data_dir, tiny_model, MEDSEARCH_API_KEYS=keys, MEDSEARCH_VIEWER_URL_TEMPLATE=VIEWER) as base:
        yield base


@pytest.fixture
def page(chromium: Path, tmp_path: Path) -> Iterator[Page]:
    """A fresh headless Chromium page with its own profile folder."""
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "profile"),
            executable_path=str(chromium),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 900},
        )
        try:
            pg = context.pages[0] if context.pages else context.new_page()
            pg.set_default_timeout(60_000)  # two loaded CPU cores in CI
            yield pg
        finally:
            context.close()


def save_shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


def save_docs_png(shot: Path, target: Path) -> None:
    """A screenshot for the docs (docs/screenshot.png, docs/region-query.png): a 256-colour PNG, under 300 kB."""
    from PIL import Image

    ui_colours = [(76, 195, 138), (245, 196, 81), (90, 169, 255), (47, 111, 184), (255, 138, 138), (227, 232, 239)]
    with Image.open(shot) as image:
        rgb = image.convert("RGB")
    # median cut keeps the greys of the images; the few UI accent colours are added so they survive
    base = rgb.quantize(colors=256 - len(ui_colours), method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette = base.getpalette()[: 3 * (256 - len(ui_colours))] + [c for colour in ui_colours for c in colour]
    holder = Image.new("P", (1, 1))
    holder.putpalette(palette)
    rgb.quantize(palette=holder, dither=Image.Dither.NONE).save(target, optimize=True)
    assert target.stat().st_size < 300_000


def open_page(page: Page, base: str) -> None:
    """Load the page and wait until it has read the vocabulary (filter fields, error titles)."""
    page.goto(base + "/")
    page.wait_for_selector("body[data-vocabulary=ready]")


def wait_for_new_results(page: Page, after_seq: str | None) -> None:
    try:
        page.wait_for_function(
            "seq => { const g = document.getElementById('results');"
            " return g.dataset.seq !== seq && document.body.dataset.state === 'idle'; }",
            arg=after_seq,
        )
    except PlaywrightError:
        save_shot(page, "failed-wait.png")
        error = page.inner_text("#error") if page.is_visible("#error") else "(no error shown)"
        status = page.inner_text("#status")
        pytest.fail(f"no new results after seq {after_seq}: status {status!r}, error {error!r}")


def thumbs_loaded(page: Page) -> None:
    page.wait_for_function(
        "() => { const imgs = [...document.querySelectorAll('#results img')];"
        " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }"
    )
