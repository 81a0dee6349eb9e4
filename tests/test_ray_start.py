"""A local Ray start that times out on a busy machine is tried again after its leftover processes are stopped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from indexer.executors import ray_start
from retrieval.errors import ClusterError

TIMEOUT = Exception(
    "The current node timed out during startup. This could happen because some of the raylet failed to startup "
    "or the GCS has become overloaded."
)


class FakeRay:
    """`ray.init` failing with the given errors in turn (each first starting a stand-in 'raylet'), then starting."""

    def __init__(self, errors: list[BaseException], tmp: Path) -> None:
        self.errors = errors
        self.calls: list[dict[str, Any]] = []
        self.leftovers: list[subprocess.Popen[bytes]] = []
        self.tmp = tmp
        self.shutdowns = 0

    def init(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)
        if self.errors:
            fake_raylet = self.tmp / "site-packages" / "ray" / "core" / "raylet"
            self.leftovers.append(
                subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", str(fake_raylet)])
            )
            raise self.errors.pop(0)

    def shutdown(self) -> None:
        self.shutdowns += 1


def fake(monkeypatch: pytest.MonkeyPatch, errors: list[BaseException], tmp: Path) -> FakeRay:
    ray = FakeRay(errors, tmp)
    monkeypatch.setattr(ray_start, "require", lambda *args: ray)
    return ray


def test_a_timed_out_start_is_stopped_and_tried_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ray = fake(monkeypatch, [TIMEOUT], tmp_path)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        ray_start.start_local(3, log_to_driver=False)
        assert [c["num_cpus"] for c in ray.calls] == [3, 3]
        assert ray.calls[0] == {"num_cpus": 3, "include_dashboard": False, "log_to_driver": False}
        assert ray.leftovers[0].wait(timeout=10) == -9  # the failed start's process was killed ...
        assert bystander.poll() is None  # ... and no other child of this process
    finally:
        bystander.kill()
        bystander.wait()


def test_a_second_time_out_is_a_cluster_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ray = fake(monkeypatch, [TIMEOUT, TIMEOUT], tmp_path)
    with pytest.raises(ClusterError, match="could not start a local Ray instance: The current node timed out"):
        ray_start.start_local(2)
    assert len(ray.calls) == ray_start.START_ATTEMPTS == 2
    assert [p.wait(timeout=10) for p in ray.leftovers] == [-9, -9]


def test_another_failure_is_not_retried(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ray = fake(monkeypatch, [ValueError("num_cpus must be positive")], tmp_path)
    with pytest.raises(ClusterError, match="num_cpus must be positive"):
        ray_start.start_local(0)
    assert len(ray.calls) == 1 and ray.shutdowns == 1
    assert ray.leftovers[0].wait(timeout=10) == -9
