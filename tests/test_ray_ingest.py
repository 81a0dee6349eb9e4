"""`--ray` indexing on a real local Ray instance: same data as `run_index`, actor and driver kills, decoder crashes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from indexer.executors.ray_start import start_local
from indexer.pipeline import IndexOptions, Progress, run_index
from indexer.ray_ingest import RayIndexSummary, RayOptions, run_index_ray  # imports no Ray until a run starts
from indexer.stages.decode import TEST_CRASH_ON
from retrieval.collection import Collection
from tests.conftest import SAMPLES, make_settings, testdata_file
from tests.test_resume import (
    MEDSEARCH,
    Snapshot,
    assert_same,
    build_corpus,
    check_index,
    committed,
    kill_group,
    medsearch_env,
    snapshot,
)

pytestmark = [
    pytest.mark.backends("sqlite-faiss"),  # the snapshot helpers read SQLite + FAISS files
    pytest.mark.peers,  # a real local Ray instance (not in `make test-fast`)
]
CRASHER = "crash_me.dcm"  # the decode worker process dies on this file (TEST_CRASH_ON), in both pipelines
BATCH = 4
ACTORS = 2


@dataclass
class Cluster:
    """A local Ray instance for this module, its address, and the environment a child driver needs."""

    address: str
    root: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """One Ray instance for the whole module (it takes 10-20 s to start here); its files and auth token stay
    in a temporary folder (short: Ray's socket paths must fit in 107 bytes), removed afterwards."""
    import ray

    root = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    saved = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "HOME", TEST_CRASH_ON)}
    os.environ.update(RAY_TMPDIR=str(root), HOME=str(root), **{TEST_CRASH_ON: CRASHER})
    try:
        start_local(ACTORS + 1, log_to_driver=False)
        address = ray.get_runtime_context().gcs_address
        env = {**os.environ}
        yield Cluster(address, root, env)
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The sample images plus real DICOMs (folder trees, a zip, broken files) and one file that crashes its decoder."""
    corpus = build_corpus(tmp_path_factory.mktemp("ray-corpus"))
    shutil.copyfile(testdata_file("CT_small.dcm"), corpus / "broken" / CRASHER)
    samples = tmp_path_factory.mktemp("ray-samples")
    shutil.copytree(SAMPLES, samples, dirs_exist_ok=True)
    return [samples, corpus]


@pytest.fixture(scope="module")
def reference(
    cluster: Cluster, inputs: list[Path], tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Snapshot:
    """`run_index` on one machine (a real decode worker process, so the crasher kills it too)."""
    data_dir = tmp_path_factory.mktemp("ray-reference") / "data"
    collection = Collection(make_settings(data_dir, tiny_model))
    try:
        summary = run_index(collection, inputs, IndexOptions(workers=1, batch_size=BATCH))
    finally:
        collection.close()
    assert summary.indexed > 30 and summary.failed >= 5, summary
    return snapshot(data_dir)


def run_ray(data_dir: Path, inputs: list[Path], model: Path, progress: Progress | None = None) -> RayIndexSummary:
    """`run_index_ray` in this process, on the module's Ray instance, into a fresh data folder."""
    collection = Collection(make_settings(data_dir, model))
    try:
        return run_index_ray(collection, inputs, IndexOptions(batch_size=BATCH), RayOptions(actors=ACTORS), progress)
    finally:
        collection.close()


def test_ray_equals_run_index_and_records_a_crashing_file_once(
    cluster: Cluster, inputs: list[Path], tiny_model: Path, reference: Snapshot, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    summary = run_ray(data_dir, inputs, tiny_model)
    got = snapshot(data_dir)
    assert_same(got, reference)
    check_index(data_dir, got, tiny_model)
    crashed = {uri: code for uri, (code, _) in got.failures.items() if uri.endswith(CRASHER)}
    assert list(crashed.values()) == ["worker_crashed"], got.failures
    assert summary.encoder_actors == ACTORS and summary.actors, summary
    assert sum(s.images for s in summary.actors.values()) >= summary.indexed


def encoder_pids() -> list[int]:
    """Live processes of encoder actors (Ray names them after the class: ray::MapWorker(MapBatches(EncodeActor)))."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if b"EncodeActor" in cmdline.read_bytes() and int(cmdline.parent.name) != os.getpid():
                pids.append(int(cmdline.parent.name))
    return pids


class KillOnFirstWrite:
    """A progress sink that SIGKILLs one encoder actor process as soon as the first batch is written."""

    def __init__(self) -> None:
        self.killed: int | None = None
        self.written_after = 0  # sources written after the kill: the run was still going

    def start(self, total: int) -> None:
        pass

    def advance(self, sources: int, images: int) -> None:
        if self.killed is not None:
            self.written_after += sources
        if self.killed is None and images:
            pids = encoder_pids()
            assert pids, "no encoder actor process found"
            self.killed = pids[0]
            os.kill(self.killed, signal.SIGKILL)

    def finish(self) -> None:
        pass


@pytest.mark.slow
def test_killed_encoder_actor_loses_and_duplicates_nothing(
    cluster: Cluster, inputs: list[Path], tiny_model: Path, reference: Snapshot, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    killer = KillOnFirstWrite()
    summary = run_ray(data_dir, inputs, tiny_model, killer)
    assert killer.killed is not None and killer.written_after > 20, killer.written_after
    assert_same(snapshot(data_dir), reference)
    # Whether the killed actor had a batch in flight depends on how far Ray ran ahead of the writes; when it
    # had, its restarted process re-ran it (a third actor process in the summary). Either way nothing is lost.
    assert len(summary.actors) >= ACTORS - 1, summary.actors


@pytest.mark.slow
def test_killed_driver_then_rerun_equals_uninterrupted(
    cluster: Cluster, inputs: list[Path], tiny_model: Path, reference: Snapshot, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    env = {**cluster.env, **medsearch_env(tiny_model)}
    command = [
        *(str(MEDSEARCH), "index", *map(str, inputs), "--batch-size", str(BATCH), "--ray-address", cluster.address),
        *("--ray-actors", str(ACTORS), "-q", "--json", "--allow-failures", "--data-dir", str(data_dir)),
    ]
    log = tmp_path / "driver.log"
    with log.open("ab") as err:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while committed(data_dir)[0] < 8 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        rows_at_kill = committed(data_dir)[0]
    finally:
        kill_group(proc)
    assert proc.returncode == -signal.SIGKILL, f"the driver ended before the kill:\n{log.read_text()[-3000:]}"
    assert 0 < rows_at_kill < len(reference.rows)
    done = subprocess.run(command, env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    report = json.loads(done.stdout)
    assert report["skipped"] > 0 and report["ray"]["encoder_actors"] == ACTORS, report
    got = snapshot(data_dir)
    assert_same(got, reference)
    check_index(data_dir, got, tiny_model)


def test_a_normal_index_run_never_imports_ray(tiny_model: Path, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from retrieval.cli import app\n"
        "try:\n"
        f"    app(['index', {str(SAMPLES)!r}, '-q', '--workers', '0', '--data-dir', {str(tmp_path / 'data')!r}])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=medsearch_env(tiny_model), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


@pytest.mark.slow
def test_pull_on_ray_indexes_every_instance_once(cluster: Cluster, tiny_model: Path, tmp_path: Path) -> None:
    from tests.orthanc import encode, start_orthanc, with_new_uids

    server = start_orthanc(tmp_path / "orthanc")
    try:
        sops = set()
        for name in ("CT_small.dcm", "MR_small_jp2klossless.dcm", "emri_small.dcm", "MR_small.dcm"):
            ds = with_new_uids(testdata_file(name), study=None)
            server.upload(encode(ds))
            sops.add(str(ds.SOPInstanceUID))
        env = {**cluster.env, **medsearch_env(tiny_model)}
        data_dir = tmp_path / "data"
        pull = [str(MEDSEARCH), "pull", "--dicomweb", server.dicomweb, "--json", "--data-dir", str(data_dir)]
        on_ray = [*pull, "--ray-address", cluster.address, "--ray-actors", str(ACTORS)]
        done = subprocess.run(on_ray, env=env, capture_output=True, timeout=300)
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        report = json.loads(done.stdout)
        assert (report["found"], report["fetched"], report["indexed"], report["failed"]) == (4, 4, 4, 0), report
        snap = snapshot(data_dir)
        assert {uri.rsplit("/", 1)[-1] for uri in snap.sources} == sops
        assert {s[2] for s in snap.sources.values()} == {"indexed"} and len(snap.rows) == 4
        again = subprocess.run(pull, env=env, capture_output=True, timeout=300)  # the plain pull sees them as done
        assert again.returncode == 0, again.stderr.decode()[-3000:]
        assert json.loads(again.stdout)["already_indexed"] == 4
    finally:
        server.stop()
