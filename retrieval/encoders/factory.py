"""The one place that picks the encoder back end (torch or OpenVINO) and its precision from the settings."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from retrieval import cpu
from retrieval.encoders.base import Encoder
from retrieval.errors import SettingsError
from retrieval.optional import import_openvino
from retrieval.settings import Settings

if TYPE_CHECKING:
    from retrieval.encoders.ov_encoder import CalibrationSource

log = logging.getLogger(__name__)
QUANTISED = ("int8", "int8-reduced", "int8-weights")  # OpenVINO (and NNCF) only
# auto's int8-reduced calibrates on at most this many images: nobody asked for the one-off quantisation, which on a
# 2-core AVX2 server costs about three full-size passes per image (statistics, then fp32 and int8 to compare)
AUTO_CALIBRATION_IMAGES = 32


@dataclass(frozen=True)
class EncoderChoice:
    """What `build_encoder` will run, and why."""

    backend: str  # "torch" | "openvino"
    precision: str  # "fp32" | "bf16" | "int8" | "int8-reduced" | "int8-weights" ("auto" only for torch)
    device: str  # as requested: "auto" | "cpu" | "cuda"
    reason: str
    warning: str | None = None  # the requested precision this CPU cannot run, and what runs instead
    automatic: bool = False  # chosen by auto: a quantised scheme falls back to fp32 quietly (no images, refused)


def cpu_has_bf16(cpuinfo: Path | None = None) -> bool:
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX): this machine's, or the one `cpuinfo` lists."""
    features = cpu.cpu_features() if cpuinfo is None else cpu.read_cpu_features(cpuinfo)
    return cpu.has_bf16(features or frozenset())


def nncf_installed() -> bool:
    """Whether NNCF (the int8 quantiser, extra "openvino-int8") can be imported (without importing it)."""
    return importlib.util.find_spec("nncf") is not None


def auto_precision(features: frozenset[str]) -> str:
    """What auto runs on a CPU with `features`: bf16 where native; on an AVX2-only CPU int8 with reduced-range
    weights (faster than fp32 there, and kept only where it agrees with fp32 on the collection's images, else fp32
    runs) when NNCF is installed; else fp32. Not on AVX-512 CPUs without bf16: int8's speed there is not measured."""
    if cpu.has_bf16(features):
        return "bf16"
    if cpu.avx2_only(features) and nncf_installed():
        return "int8-reduced"
    return "fp32"


def cpu_precision(requested: str, features: frozenset[str]) -> tuple[str, str | None]:
    """The OpenVINO precision that runs for `requested` on a CPU with `features`, and a warning when it is not the
    one requested: bf16 only where it is native (elsewhere OpenVINO compiles the bf16 hint to fp32 anyway); int8
    only with AVX-512 VNNI or AMX (elsewhere its kernels saturate: min cosine 0.930 to fp32 measured, full size;
    int8-reduced is the scheme made for those CPUs)."""
    has = ", ".join(sorted(features)) or "none of them"
    if requested == "auto":
        return auto_precision(features), None
    if requested == "bf16" and not cpu.has_bf16(features):
        return "fp32", (
            "MEDSEARCH_ENCODER_PRECISION=bf16 needs a CPU with AVX-512 BF16 or AMX (this one has: "
            f"{has}); OpenVINO would compile it to fp32, so fp32 runs. Set MEDSEARCH_ENCODER_PRECISION=auto"
        )
    if requested == "int8" and not cpu.has_exact_int8(features):
        return "fp32", (
            "MEDSEARCH_ENCODER_PRECISION=int8 needs a CPU with AVX-512 VNNI or AMX int8 instructions (this one has: "
            f"{has}); without them OpenVINO's int8 vectors drift from fp32 (min cosine 0.930 measured on an "
            "AVX2-only CPU), so fp32 runs. Set MEDSEARCH_ENCODER_PRECISION=int8-reduced (int8 with 7-bit weights, "
            "which cannot saturate there) or auto"
        )
    return requested, None


_WARNED: set[str] = set()


def warn_once(message: str) -> None:
    """One warning log line per message and process (not one per batch, query or stats call)."""
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning("%s", message)


def openvino_installed() -> bool:
    """Whether the OpenVINO runtime can be imported (without importing it)."""
    return importlib.util.find_spec("openvino") is not None


def _cuda_available() -> bool:
    """Without an NVIDIA driver there is no CUDA: answered without importing torch (10-30 s on a busy machine), so
    an unavailable model is still reported within seconds; with a driver, torch decides."""
    import ctypes.util

    if ctypes.util.find_library("cuda") is None and not Path("/proc/driver/nvidia").exists():
        return False
    import torch

    return bool(torch.cuda.is_available())


def choose_encoder(settings: Settings) -> EncoderChoice:
    """Resolve MEDSEARCH_ENCODER_BACKEND / _PRECISION against the device and what is installed."""
    backend, precision, device = settings.encoder_backend, settings.encoder_precision, settings.device
    if backend == "auto":
        on_gpu = device == "cuda" or (device == "auto" and _cuda_available())
        if on_gpu:
            backend, reason = "torch", "a CUDA device is used"
        elif precision in QUANTISED or openvino_installed():
            backend, reason = "openvino", "CPU with OpenVINO installed"
        else:
            backend, reason = "torch", "OpenVINO is not installed"
    else:
        reason = f"MEDSEARCH_ENCODER_BACKEND={backend}"
    if backend == "openvino":
        if device == "cuda":
            raise SettingsError(
                "MEDSEARCH_ENCODER_BACKEND=openvino runs on the CPU but MEDSEARCH_DEVICE=cuda: use "
                "MEDSEARCH_ENCODER_BACKEND=torch (or auto) on a GPU, or MEDSEARCH_DEVICE=cpu"
            )
        runs, warning = cpu_precision(precision, cpu.cpu_features())
        automatic = precision == "auto" and runs.startswith("int8")
        if automatic:
            reason += "; int8-reduced on this AVX2-only CPU where it keeps the cosine to fp32, else fp32"
        return EncoderChoice("openvino", runs, "cpu", reason, warning, automatic)
    if precision in QUANTISED:
        raise SettingsError(
            f"MEDSEARCH_ENCODER_PRECISION={precision} needs the OpenVINO back end: set "
            'MEDSEARCH_ENCODER_BACKEND=openvino or auto, and pip install "medsearch[openvino-int8]"'
        )
    return EncoderChoice("torch", precision, device, reason)


def build_encoder(settings: Settings, calibration: CalibrationSource | None = None) -> Encoder:
    """The encoder named by the settings, not yet loaded (the model loads on first use). `calibration` gives int8
    its frames (the collection layer passes the collection's own images: encoders sit below it)."""
    choice = choose_encoder(settings)
    log.info("encoder back end %s, precision %s (%s)", choice.backend, choice.precision, choice.reason)
    if choice.warning:
        warn_once(choice.warning)
    if choice.backend == "torch":
        from retrieval.encoders.medsiglip import MedSigLIPEncoder

        return MedSigLIPEncoder(settings.model, choice.device, choice.precision)
    from retrieval.encoders.ov_encoder import OpenVINOEncoder

    import_openvino("The OpenVINO encoder back end")
    encoder = OpenVINOEncoder(
        settings.model,
        settings.data_dir,
        choice.precision,
        threads=settings.encoder_threads,
        bf16_hint=choice.precision == "int8" and cpu_has_bf16(),
        calibration=calibration,
        calibration_images=min(settings.encoder_calibration_images, AUTO_CALIBRATION_IMAGES)
        if choice.automatic
        else settings.encoder_calibration_images,
        automatic=choice.automatic,
    )
    encoder.warning = choice.warning  # kept for stats and /readyz (int8 refused at load replaces it)
    return encoder
