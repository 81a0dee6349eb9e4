"""MedSigLIP (and any SigLIP checkpoint) through the transformers Auto classes, loaded lazily and once."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from contextlib import nullcontext
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


def config_hash(config: dict[str, Any]) -> str:
    """Hash of a model config with volatile keys (paths, versions) removed."""
    text = json.dumps(_clean_config(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class MedSigLIPEncoder:
    """SigLIP two-tower encoder; `load()` happens on first use, once, behind a lock."""

    def __init__(self, model_ref: str, device: str = "auto") -> None:
        self.model_ref = model_ref
        self.requested_device = device
        self._lock = threading.Lock()
        self._model: Any = None
        self._processor: Any = None
        self._fingerprint: ModelFingerprint | None = None
        self._device = "cpu"

    # -- loading -------------------------------------------------------------------------
    def load(self) -> None:
        """Load model and processor (offline-first for local folders)."""
        with self._lock:
            if self._model is not None:
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
            model = model.eval().to(device)
            self._device = device
            self._processor = processor
            self._model = model
            self._fingerprint = self._make_fingerprint(model)
            log.info("loaded %s on %s (width %d)", self.model_ref, device, self._fingerprint.width)

    def _from_pretrained(self, processor_cls: Any, model_cls: Any) -> tuple[Any, Any]:
        """Local folder or local cache first; the hub only when it answers (no long retry loops offline)."""
        processor, model = load_pretrained(self.model_ref, processor_cls, model_cls, help_text=LOAD_HELP)
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
            model_id=self.model_ref,
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

    def _autocast(self) -> Any:
        import torch

        if self._device != "cuda":
            return nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    @staticmethod
    def _normalise(tensor: Any) -> Vectors:
        arr: Vectors = tensor.detach().float().cpu().numpy().astype(np.float32)
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        arr = (arr / norms).astype(np.float32)
        return arr

    def encode_pixel_values(self, pixel_values: npt.NDArray[np.float32]) -> Vectors:
        """Embed a (N, 3, H, W) batch from `preprocess`; returns (N, width) unit vectors."""
        import torch

        self.load()
        with torch.inference_mode(), self._autocast():
            batch = torch.from_numpy(np.ascontiguousarray(pixel_values)).to(self._device)
            out = self._model.get_image_features(pixel_values=batch)
        return self._normalise(out.pooler_output if hasattr(out, "pooler_output") else out)

    def encode_texts(self, texts: Sequence[str]) -> Vectors:
        """Embed texts (max_length padding to 64 tokens, as the text tower pools the last token)."""
        import torch

        self.load()
        inputs = self._processor(
            text=list(texts),
            padding="max_length",
            max_length=TEXT_MAX_LENGTH,
            truncation=True,
            return_tensors="pt",
        )
        inputs = {k: v.to(self._device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        if "attention_mask" in inputs:  # SigLIP was trained without an attention mask
            inputs.pop("attention_mask")
        with torch.inference_mode(), self._autocast():
            out = self._model.get_text_features(**inputs)
        return self._normalise(out.pooler_output if hasattr(out, "pooler_output") else out)

    def text_scores(self, cosines: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Calibrated text->image probability: sigmoid(cos * exp(logit_scale) + logit_bias)."""
        self.load()
        scale = float(self._model.logit_scale.detach().float().exp().cpu())
        bias = float(self._model.logit_bias.detach().float().cpu())
        logits = np.asarray(cosines, dtype=np.float64) * scale + bias
        probs: npt.NDArray[np.float32] = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        return probs
