"""Optional heavy dependencies: one import helper whose error names the feature and the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from retrieval.errors import MissingExtraError


def require(module: str, feature: str, extra: str) -> ModuleType:
    """Import `module` or raise an error saying which extra of medsearch brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{feature} needs the Python package {module.split('.')[0]!r}, which is not installed. "
            f'Install it with: pip install "medsearch[{extra}]"'
        ) from exc
