"""Loading transformers models offline-first: a local folder, then the local cache, the hub only if it answers."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from retrieval.errors import MedsearchError, ModelLoadError


def resolve_device(requested: str, setting: str, error: type[MedsearchError] = ModelLoadError) -> str:
    """'auto' takes CUDA when present, else the CPU; an explicit 'cuda' without a CUDA device is a clear error."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise error(f"{setting}=cuda but no CUDA device is available")
    return requested


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hugging Face endpoint accepts a TCP connection within `timeout` seconds, name lookup
    included (a resolver that hangs does not hold the caller up), and offline mode is off."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    answer: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                answer.append(True)
        except OSError:
            answer.append(False)

    worker = threading.Thread(target=attempt, daemon=True, name="hub-reachable")
    worker.start()
    worker.join(timeout)
    return bool(answer and answer[0])


def in_local_cache(model_ref: str) -> bool:
    """True when the Hugging Face cache holds a snapshot of this hub id (no network, no transformers import)."""
    from huggingface_hub import constants

    folder = Path(constants.HF_HUB_CACHE) / ("models--" + model_ref.replace("/", "--")) / "snapshots"
    return folder.is_dir() and any(folder.iterdir())


def _unavailable(model_ref: str, help_text: str) -> ModelLoadError:
    return ModelLoadError(
        f"{model_ref!r} is neither a local folder nor in the local Hugging Face cache, and the "
        f"model hub is not reachable from this machine. {help_text}"
    )


def require_available(model_ref: str, help_text: str) -> None:
    """Fail within seconds, before torch and transformers are imported (10-30 s on a busy machine), when the
    model is neither a local folder, nor cached, nor reachable on the hub."""
    if Path(model_ref).is_dir() or in_local_cache(model_ref) or hub_reachable():
        return
    raise _unavailable(model_ref, help_text)


def load_pretrained(model_ref: str, *classes: Any, help_text: str, **kwargs: Any) -> list[Any]:
    """`cls.from_pretrained(model_ref)` for each class: local folder or cache first (no long retry loops offline).

    Raises ModelLoadError with `help_text` when the model is neither local nor reachable.
    """
    if Path(model_ref).is_dir():
        return [cls.from_pretrained(model_ref, **kwargs) for cls in classes]
    try:
        return [cls.from_pretrained(model_ref, local_files_only=True, **kwargs) for cls in classes]
    except OSError:
        pass
    if not hub_reachable():
        raise _unavailable(model_ref, help_text)
    return [cls.from_pretrained(model_ref, **kwargs) for cls in classes]
