"""The door to every source's reads: the built-in kinds registered, then the registry's lookups (by kind, by scheme)."""

from __future__ import annotations

import retrieval.sources.files
import retrieval.sources.pull
import retrieval.sources.received  # noqa: F401  (each module registers its kinds on import)
from retrieval.sources.registry import (
    READERS,
    forget,
    load,
    local_path,
    modules,
    read_ref,
    read_source,
    release,
    stored_prefix,
    worker_readable,
)

__all__ = [
    "READERS",
    "forget",
    "load",
    "local_path",
    "modules",
    "read_ref",
    "read_source",
    "release",
    "stored_prefix",
    "worker_readable",
]
