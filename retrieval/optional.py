"""Optional dependencies: one helper whose error names the feature and the extra that installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from retrieval.errors import MedsearchError


class MissingDependencyError(MedsearchError):
    """A feature needs a package that is not installed."""

    code = "missing_dependency"


def require(module: str, *, feature: str, extra: str) -> ModuleType:
    """Import `module`, or fail saying which feature needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f'{feature} needs the Python package {module!r}, which is not installed: pip install "medsearch[{extra}]"'
        ) from exc
