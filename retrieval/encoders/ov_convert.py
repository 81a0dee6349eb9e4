"""Turn the loaded transformers model into OpenVINO IR: both towers at fp32, and the image tower as NNCF int8."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from retrieval.encoders.medsiglip import TEXT_MAX_LENGTH
from retrieval.errors import ModelLoadError
from retrieval.optional import import_openvino, require

log = logging.getLogger(__name__)
IMAGE_XML = "image.xml"
TEXT_XML = "text.xml"
ENCODER_LAYERS = "encoder.layers."  # the transformer blocks: the only linears int8 touches
# int8 is kept only when its vectors stay this close to fp32's on the collection's own images (issue 22)
MIN_INT8_COSINE = 0.999
VALIDATION_IMAGES = 32  # of the calibration frames, spread: encoded both ways once, at quantisation


def _wrappers(model: Any) -> tuple[Any, Any]:
    """Small modules whose forward is exactly the product's call: features -> pooled vector (not normalised)."""
    import torch

    class ImageFeatures(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values: Any) -> Any:
            out = self.inner.get_image_features(pixel_values=pixel_values)
            return out.pooler_output if hasattr(out, "pooler_output") else out

    class TextFeatures(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any) -> Any:
            out = self.inner.get_text_features(input_ids=input_ids)
            return out.pooler_output if hasattr(out, "pooler_output") else out

    return ImageFeatures(model).eval(), TextFeatures(model).eval()


def image_size(model: Any) -> int:
    """The side of the square input the vision tower takes (448 for MedSigLIP)."""
    return int(model.config.vision_config.image_size)


def convert_towers(model: Any, folder: Path) -> dict[str, object]:
    """Convert both towers of an fp32 torch model to IR files in `folder` (weights kept fp32: bf16 is a hint)."""
    import torch

    ov = import_openvino("The OpenVINO encoder back end")

    image, text = _wrappers(model)
    side = image_size(model)
    t0 = time.perf_counter()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # shape checks traced as constants (TracerWarning): the sizes are fixed, the batch dimension stays free
        warnings.filterwarnings("ignore", message=".*might cause the trace to be incorrect")
        # transformers' own deprecation, raised by the tracer's module walk: nothing a user can act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        pixels = torch.zeros((1, 3, side, side), dtype=torch.float32)
        image_input = [("pixel_values", [-1, 3, side, side], ov.Type.f32)]
        image_ir = ov.convert_model(image, example_input=pixels, input=image_input)
        ids = torch.ones((1, TEXT_MAX_LENGTH), dtype=torch.int64)
        text_ir = ov.convert_model(text, example_input=ids, input=[("input_ids", [-1, TEXT_MAX_LENGTH], ov.Type.i64)])
    ov.save_model(image_ir, folder / IMAGE_XML, compress_to_fp16=False)
    ov.save_model(text_ir, folder / TEXT_XML, compress_to_fp16=False)
    seconds = time.perf_counter() - t0
    log.info("converted both towers to OpenVINO in %.1f s", seconds)
    return {"convert_seconds": round(seconds, 2), "image_size": side}


def outside_encoder_layers(model: Any) -> list[str]:
    """The matrix products outside the transformer blocks (patch embedding, pooling head): left at fp32."""
    return [
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if op.get_type_name() in ("MatMul", "Convolution") and ENCODER_LAYERS not in op.get_friendly_name()
    ]


def quantize_image_tower(
    fp32_xml: Path,
    folder: Path,
    calibration: Sequence[npt.NDArray[np.float32]],
    batch: int = 1,
    config: dict[str, object] | None = None,
    reduced_range: bool = False,
) -> dict[str, object]:
    """NNCF post-training int8 of the transformer blocks' linear layers (SmoothQuant off), calibrated on
    `calibration` frames preprocessed as indexed; the patch embedding and the pooling head stay fp32.

    `reduced_range` quantises every weight to half the int8 range (NNCF's overflow fix): CPUs without VNNI (AVX2,
    AVX-512 without VNNI) sum pairs of u8 x s8 products in 16 bits (vpmaddubsw), which saturates with full-range
    weights; with 7-bit weights it cannot (min cosine to fp32 0.949 -> 0.9996 on a 2-layer full-width tower
    capped at AVX2, issue 22).

    One image per calibration step: NNCF keeps statistics of every quantised activation, and at batch 8 on the
    full-size tower that went past 15 GB (killed by the OOM killer here); at batch 1 it stays a fraction.

    Then the agreement is measured: up to VALIDATION_IMAGES of the frames encoded by the fp32 model and by the
    int8 one compiled with `config` (as it will run); the manifest records the lowest cosine, and the encoder
    keeps int8 only at MIN_INT8_COSINE or above."""
    ov = import_openvino("The OpenVINO encoder back end")
    nncf = require("nncf", "The int8 encoder precision (NNCF quantisation)", "openvino-int8")
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        OverflowFix,
    )

    if not calibration:
        raise ModelLoadError("int8 calibration needs at least one image")
    model = ov.Core().read_model(fp32_xml)
    outside = outside_encoder_layers(model)
    frames = np.stack(calibration).astype(np.float32)
    batches = [frames[i : i + batch] for i in range(0, len(frames), batch)]
    t0 = time.perf_counter()
    quantized = nncf.quantize(
        model,
        nncf.Dataset(batches),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(batches),
        ignored_scope=nncf.IgnoredScope(names=outside, validate=False),
        # SmoothQuant off: with it, min cosine to fp32 fell to 0.983 on MedSigLIP's architecture (issue 13)
        advanced_parameters=AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1),
            overflow_fix=OverflowFix.ENABLE if reduced_range else None,  # None: NNCF's default (first layer)
        ),
    )
    ov.save_model(quantized, folder / IMAGE_XML, compress_to_fp16=False)
    seconds = time.perf_counter() - t0
    log.info("quantised the image tower to int8 on %d images in %.1f s", len(frames), seconds)
    step = max(1, len(frames) // VALIDATION_IMAGES)
    checked = frames[::step][:VALIDATION_IMAGES]
    worst = min_cosine(ov.Core().read_model(fp32_xml), quantized, checked, config or {})
    log.info("int8 against fp32 on %d of the collection's images: min cosine %.5f", len(checked), worst)
    return {
        "reduced_range": reduced_range,
        "calibration_images": len(frames),
        "quantize_seconds": round(seconds, 2),
        "validation_images": len(checked),
        "min_cosine_vs_fp32": round(worst, 6),
    }


def min_cosine(reference: Any, candidate: Any, frames: npt.NDArray[np.float32], config: dict[str, object]) -> float:
    """The lowest cosine between the two models' (unnormalised) outputs over `frames`, one image at a time; the
    reference is compiled at fp32, the candidate with `config`."""
    ov = import_openvino("The OpenVINO encoder back end")
    core = ov.Core()
    ref = core.compile_model(reference, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
    other = core.compile_model(candidate, "CPU", config).create_infer_request()
    worst = 1.0
    for frame in frames:
        a, b = (np.array(r.infer({0: frame[None]})[0], dtype=np.float64)[0] for r in (ref, other))
        worst = min(worst, float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) or 1.0)))
    return worst


def compress_image_tower_weights(fp32_xml: Path, folder: Path) -> dict[str, object]:
    """NNCF weight-only int8 (INT8_ASYM, per output channel) of the transformer blocks' linear layers: weights
    stored as int8 and decompressed in the kernel, activations and arithmetic stay fp32. Needs no calibration
    (so it depends on the model only, not on a collection)."""
    ov = import_openvino("The OpenVINO encoder back end")
    nncf = require("nncf", "The int8-weights encoder precision (NNCF weight compression)", "openvino-int8")

    model = ov.Core().read_model(fp32_xml)
    outside = outside_encoder_layers(model)
    t0 = time.perf_counter()
    compressed = nncf.compress_weights(
        model,
        mode=nncf.CompressWeightsMode.INT8_ASYM,
        ignored_scope=nncf.IgnoredScope(names=outside, validate=False),
    )
    ov.save_model(compressed, folder / IMAGE_XML, compress_to_fp16=False)
    seconds = time.perf_counter() - t0
    log.info("compressed the image tower's weights to int8 in %.1f s", seconds)
    return {"compress_seconds": round(seconds, 2)}
