"""The offline model error comes before torch and transformers are imported, so it appears within seconds."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from retrieval import hub

SCRIPT = textwrap.dedent(
    """
    import sys, time
    start = time.monotonic()
    from retrieval.cli import main
    sys.argv = ["medsearch", "search", "--text", "chest"]
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    heavy = sorted(m for m in ("torch", "transformers") if m in sys.modules)
    print(f"exit={code} heavy={','.join(heavy) or '-'} seconds={time.monotonic() - start:.2f}")
    """
)


@pytest.mark.e2e
def test_unavailable_model_fails_before_the_heavy_imports(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSEARCH_")}
    env.pop("HF_HUB_OFFLINE", None)  # the hub must be found unreachable, not assumed so
    env.update({"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf"), "COLUMNS": "300"})
    env["MEDSEARCH_DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert "error (model_unavailable): 'google/medsiglip-448' is neither a local folder" in proc.stderr, proc.stderr
    report = proc.stdout.strip().splitlines()[-1]
    assert report.startswith("exit=1 heavy=- "), report  # torch/transformers (10-30 s when busy) never imported
    assert float(report.rsplit("=", 1)[1]) < 60  # generous: typically 2-7 s on a busy machine


def test_hub_check_does_not_wait_for_a_hanging_name_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def hanging(*args: object, **kwargs: object) -> None:
        release.wait(30)  # a resolver that never answers
        raise OSError("too late")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub.socket, "create_connection", hanging)
    start = time.monotonic()
    assert hub.hub_reachable(timeout=0.5) is False
    elapsed = time.monotonic() - start
    release.set()
    assert elapsed < 5


def test_cached_and_local_models_are_not_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)
    hub.require_available(str(tmp_path), "help")  # a local folder
    snapshot = tmp_path / "models--google--medsiglip-448" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    hub.require_available("google/medsiglip-448", "help")  # cached
    try:
        hub.require_available("google/other-model", "help")
    except hub.ModelLoadError as exc:
        assert "neither a local folder nor in the local Hugging Face cache" in str(exc)
    else:
        raise AssertionError("an uncached model with no hub must be refused")
