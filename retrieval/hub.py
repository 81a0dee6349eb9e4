"""Loading transformers models offline-first: a local folder, then the local cache, the hub only if it answers."""

from __future__ import annotations

import os
import socket
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
    """True when the Hugging Face endpoint accepts a TCP connection (and offline mode is off)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


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
        raise ModelLoadError(
            f"{model_ref!r} is neither a local folder nor in the local Hugging Face cache, and the "
            f"model hub is not reachable from this machine. {help_text}"
        )
    return [cls.from_pretrained(model_ref, **kwargs) for cls in classes]
