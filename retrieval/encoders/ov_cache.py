"""Where converted OpenVINO models are kept, keyed by model fingerprint, precision and OpenVINO version; atomic."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from retrieval.encoders.base import ModelFingerprint
from retrieval.fsutil import fsync_dir

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
MODEL_CACHE = ".medsearch-openvino"  # inside a writable local model folder
DATA_CACHE = "openvino-cache"  # inside the data folder otherwise (hub ids, read-only folders), and for int8


def _writable_dir(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


def cache_root(model_ref: str, data_dir: Path, *, per_collection: bool = False) -> Path:
    """Next to the model when it is a writable local folder, else in the data folder.

    `per_collection` (the int8 model, calibrated on this collection's images) always lives in the data folder."""
    model_dir = Path(model_ref)
    if not per_collection and model_dir.is_dir() and _writable_dir(model_dir / MODEL_CACHE):
        return model_dir / MODEL_CACHE
    return data_dir / DATA_CACHE


def cache_key(fingerprint: ModelFingerprint, precision: str, ov_version: str) -> str:
    """Folder name: a changed model, preprocessing, precision or OpenVINO release never reuses an old conversion."""
    release = ov_version.split("-")[0]
    return f"{fingerprint.key}-{precision}-ov{release}"


def manifest_for(fingerprint: ModelFingerprint, precision: str, ov_version: str) -> dict[str, object]:
    """What a cache folder must say about itself to be used: the model's fingerprint, never how its path is
    spelled (a relative and an absolute path to one folder share one conversion)."""
    return {"fingerprint": fingerprint.key, "precision": precision, "openvino": ov_version}


def read_valid(folder: Path, expected: dict[str, object], files: tuple[str, ...]) -> bool:
    """True when `folder` holds every file and a manifest agreeing with `expected` (anything else is rebuilt)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or any(manifest.get(k) != v for k, v in expected.items()):
        log.warning("the OpenVINO cache %s was made for another model or version: converting again", folder)
        return False
    return all((folder / name).is_file() for name in files)


def publish(
    folder: Path, expected: dict[str, object], write: Callable[[Path], dict[str, object]], files: tuple[str, ...]
) -> None:
    """Build the cache in a temporary sibling folder, fsync it, then rename it into place in one step.

    A killed conversion leaves at most a `.tmp-*` folder (ignored, removed by the next conversion), never a
    half-written cache; `write(tmp)` writes the model files and returns extra manifest fields."""
    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=parent))
    try:
        extra = write(tmp)
        (tmp / MANIFEST).write_text(json.dumps({**expected, **extra}, indent=2))
        for path in tmp.iterdir():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(tmp)
        if read_valid(folder, expected, files):  # another process published the same cache meanwhile: keep it
            shutil.rmtree(tmp, ignore_errors=True)
            return
        if folder.exists():  # an invalid or foreign cache: move it aside first (rename is the atomic step)
            aside = Path(tempfile.mkdtemp(prefix=f".tmp-old-{folder.name}-", dir=parent))
            os.replace(folder, aside / "old")
            shutil.rmtree(aside, ignore_errors=True)
        os.replace(tmp, folder)
        fsync_dir(parent)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if not read_valid(folder, expected, files):  # another process publishing the same cache wins the race
            raise
        log.info("another process published %s first (%s)", folder, exc)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_stale_temporaries(parent: Path, older_than: float = 6 * 3600) -> None:
    """Leftovers of killed conversions (never a folder another process may still be writing)."""
    import time

    for path in parent.glob(".tmp-*"):
        try:
            if time.time() - path.stat().st_mtime > older_than:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue
