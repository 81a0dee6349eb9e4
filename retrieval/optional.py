"""Optional heavy dependencies: one import helper whose error names the feature and the extra to install, and
OpenVINO imported with its telemetry off."""

from __future__ import annotations

import importlib
import sys
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


def without_telemetry() -> None:
    """Turn OpenVINO's (and NNCF's) usage telemetry off before they are imported.

    `import openvino` otherwise sends usage events and writes ~/intel/openvino_ga_cid and ~/intel/stats (its
    documented opt-out, `opt_in_out --opt_out`, writes a consent file under ~ too). Both libraries fall back to a
    no-op stub when the `openvino_telemetry` package cannot be imported, so medsearch makes it unimportable."""
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]


def import_openvino(feature: str) -> ModuleType:
    """`openvino`, telemetry off, or an error naming `feature` and the extra that brings it."""
    without_telemetry()
    return require("openvino", feature, "openvino-int8")
