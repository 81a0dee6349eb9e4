"""MedSigLIP (and any SigLIP checkpoint) through the transformers Auto classes, loaded lazily and once."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from retrieval.encoders.base import ModelFingerprint, Vectors
from retrieval.errors import ModelLoadError
from retrieval.hub import hub_reachable, load_pretrained, require_available, resolve_device  # noqa: F401  # hub_reachable re-exported
from retrieval.imaging.preprocess import PREPROCESS_VERSION, ImageProcessor

log = logging.getLogger(__name__)

STANDIN_MARKER = "medsearch-standin.json"
TEXT_MAX_LENGTH = 64
_VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version", "_commit_hash", "torch_dtype", "dtype"}

LOAD_HELP = (
    "To use the real model: accept the licence of google/medsiglip-448 on Hugging Face, run "
    "`hf auth login`, or download it and set MEDSEARCH_MODEL=/path/to/folder. Without network "
    "access, `medsearch dev make-test-model DIR` builds an offline stand-in (its similarities are "
    "meaningless; it only proves the plumbing)."
)


def _clean_config(config: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in _VOLATILE_CONFIG_KEYS:
            continue
        out[key] = _clean_config(value) if isinstance(value, dict) else value
    return out


def torch_precision(requested: str, device: str) -> str:
    """The torch back end's precision: bf16 weights on CUDA by default, fp32 on the CPU (int8 is OpenVINO's)."""
    if requested == "auto":
        return "bf16" if device == "cuda" else "fp32"
    if requested not in ("fp32", "bf16"):
        raise ModelLoadError(
            f"MEDSEARCH_ENCODER_PRECISION={requested} is not available with the torch back end (fp32 or bf16); "
            "int8 needs MEDSEARCH_ENCODER_BACKEND=openvino"
        )
    return requested


def normalise(arr: Vectors) -> Vectors:
    """Rows scaled to unit length (a zero row stays zero), as float32."""
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: Vectors = (arr / norms).astype(np.float32)
    return out


def config_hash(config: dict[str, Any]) -> str:
    """Hash of a model config with volatile keys (paths, versions) removed."""
    text = json.dumps(_clean_config(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class MedSigLIPEncoder:
    """SigLIP two-tower encoder; `load()` happens on first use, once, behind a lock."""

    def __init__(self, model_ref: str, device: str = "auto", precision: str = "auto") -> None:
        self.model_ref = model_ref
        self.requested_device = device
        self.requested_precision = precision
        self._lock = threading.Lock()
        self._model: Any = None
        self._processor: Any = None
        self._fingerprint: ModelFingerprint | None = None
        self._device = "cpu"
        self._precision = "fp32"
        self._runs = "not loaded"
        self._scale_bias = (1.0, 0.0)

    # -- loading -------------------------------------------------------------------------
    def load(self) -> None:
        """Load model and processor (offline-first for local folders)."""
        with self._lock:
            if self._fingerprint is not None:
                return
            require_available(self.model_ref, LOAD_HELP)
            from transformers import AutoModel, AutoProcessor

            device = resolve_device(self.requested_device, "MEDSEARCH_DEVICE")
            try:
                processor, model = self._from_pretrained(AutoProcessor, AutoModel)
            except ModelLoadError:
                raise
            except Exception as exc:
                raise ModelLoadError(
                    f"could not load the embedding model {self.model_ref!r}: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}. {LOAD_HELP}"
                ) from exc
            if not hasattr(model, "get_image_features") or not hasattr(model, "get_text_features"):
                raise ModelLoadError(f"{self.model_ref!r} is not a two-tower (SigLIP-style) model")
            model = model.eval()
            # the fingerprint is taken from the weights as stored (fp32), before any cast: it must not depend on the
            # device or precision, or vectors written by one back end would be refused when queried with another
            fingerprint = self._make_fingerprint(model)
            # likewise the text-score calibration: read at fp32, so every back end and precision scores alike
            self._scale_bias = (
                float(model.logit_scale.detach().float().exp().cpu()),
                float(model.logit_bias.detach().float().cpu()),
            )
            precision = torch_precision(self.requested_precision, device)
            if precision == "bf16":  # GPU: bf16 weights (half the memory and bandwidth), not only bf16 autocast
                import torch

                model = model.to(dtype=torch.bfloat16)
            self._model = model.to(device)
            self._device = device
            self._precision = precision
            self._runs = f"{self._dtype_of(self._model)} on {device} (torch, read back from the weights)"
            self._processor = processor
            self._fingerprint = fingerprint
            log.info("loaded %s on %s, %s (width %d)", self.model_ref, device, precision, fingerprint.width)

    def _from_pretrained(self, processor_cls: Any, model_cls: Any) -> tuple[Any, Any]:
        """Local folder or local cache first; the hub only when it answers (no long retry loops offline)."""
        (processor,) = load_pretrained(self.model_ref, processor_cls, help_text=LOAD_HELP)
        # sdpa attention (transformers' default for SigLIP today; named so a changed default cannot slow us down)
        (model,) = load_pretrained(self.model_ref, model_cls, help_text=LOAD_HELP, attn_implementation="sdpa")
        return processor, model

    def _make_fingerprint(self, model: Any) -> ModelFingerprint:
        import torch

        cfg = model.config.to_dict()
        width = int(model.config.vision_config.hidden_size)
        text_width = getattr(model.config.text_config, "projection_size", None) or int(
            model.config.text_config.hidden_size
        )
        if int(text_width) != width:
            raise ModelLoadError(f"image width {width} and text width {text_width} differ in {self.model_ref!r}")
        digest = hashlib.sha256()
        for name, param in sorted(model.state_dict().items())[:16]:
            sample = param.detach().flatten()[:512].to(torch.float32).cpu().numpy()
            digest.update(name.encode())
            digest.update(sample.tobytes())
        standin = Path(self.model_ref, STANDIN_MARKER).is_file()
        return ModelFingerprint(
            # a local folder by its absolute path: the collection remembers a model it can find again from anywhere
            model_id=os.path.abspath(self.model_ref) if Path(self.model_ref).is_dir() else self.model_ref,
            config_hash=config_hash(cfg),
            weights_hash=digest.hexdigest(),
            preprocess_version=PREPROCESS_VERSION,
            width=width,
            standin=standin,
        )

    # -- protocol --------------------------------------------------------------------------
    @property
    def fingerprint(self) -> ModelFingerprint:
        self.load()
        assert self._fingerprint is not None
        return self._fingerprint

    @property
    def image_processor(self) -> ImageProcessor:
        self.load()
        return self._processor.image_processor  # type: ignore[no-any-return]

    @property
    def encoded_by(self) -> str:
        """Back end, precision and device, e.g. "torch-fp32-cpu" (recorded with every vector written)."""
        self.load()
        return f"torch-{self._precision}-{self._device}"

    @property
    def runs(self) -> str:
        """What computes the vectors, read back from the loaded weights, e.g. "fp32 on cpu (torch, ...)"."""
        self.load()
        return self._runs

    @staticmethod
    def _dtype_of(model: Any) -> str:
        names = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        return names.get(dtype, dtype)

    @property
    def torch_model(self) -> Any:
        """The loaded transformers model (the OpenVINO back end converts it); None after `release_weights()`."""
        self.load()
        return self._model

    def release_weights(self) -> None:
        """Drop the torch model (another back end now runs it); fingerprint, processor and text scores stay."""
        self.load()
        self._model = None

    def _require_model(self) -> Any:
        self.load()
        if self._model is None:
            raise ModelLoadError("the torch weights were released: this encoder now runs on another back end")
        return self._model

    @staticmethod
    def _normalise(tensor: Any) -> Vectors:
        arr: Vectors = tensor.detach().float().cpu().numpy().astype(np.float32)
        return normalise(arr)

    def _to_device(self, array: npt.NDArray[Any]) -> Any:
        """A host array on the model's device: pinned memory and a non-blocking copy on CUDA."""
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self._device != "cuda":
            return tensor
        return tensor.pin_memory().to(self._device, non_blocking=True)

    def encode_pixel_values(self, pixel_values: npt.NDArray[np.float32]) -> Vectors:
        """Embed a (N, 3, H, W) batch from `preprocess`; returns (N, width) unit vectors."""
        import torch

        model = self._require_model()
        with torch.inference_mode():
            batch = self._to_device(pixel_values).to(dtype=next(model.parameters()).dtype)
            out = model.get_image_features(pixel_values=batch)
        return self._normalise(out.pooler_output if hasattr(out, "pooler_output") else out)

    def tokenize(self, texts: Sequence[str]) -> npt.NDArray[np.int64]:
        """Token ids as the text tower takes them: padded to 64 tokens, no attention mask (as SigLIP was trained)."""
        self.load()
        inputs = self._processor(
            text=list(texts),
            padding="max_length",
            max_length=TEXT_MAX_LENGTH,
            truncation=True,
            return_tensors="np",
        )
        ids: npt.NDArray[np.int64] = np.asarray(inputs["input_ids"], dtype=np.int64)
        return ids

    def encode_texts(self, texts: Sequence[str]) -> Vectors:
        """Embed texts (max_length padding to 64 tokens, as the text tower pools the last token)."""
        import torch

        model = self._require_model()
        ids = self.tokenize(texts)
        with torch.inference_mode():
            out = model.get_text_features(input_ids=self._to_device(ids))
        return self._normalise(out.pooler_output if hasattr(out, "pooler_output") else out)

    def text_scores(self, cosines: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Calibrated text->image probability: sigmoid(cos * exp(logit_scale) + logit_bias)."""
        self.load()
        scale, bias = self._scale_bias
        logits = np.asarray(cosines, dtype=np.float64) * scale + bias
        probs: npt.NDArray[np.float32] = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        return probs
